"""The object store: S3, Aliyun OSS, MinIO or a local folder, behind one client.

URIs, connection settings (shared by boto3 and Lance), listing, reading and atomic
writes, and the masking of credentials in logs and errors.
"""
