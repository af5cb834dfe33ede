"""Lance tables: the data contracts, reading and writing, layout and upkeep, publishing.

``contracts`` holds every table's schema and column helpers; writers and readers both
import it, so a reader never imports a writer.
"""
