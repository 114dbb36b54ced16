"""Helpers that are not model code and import nothing else of the package: matplotlib for the plots
(`figures`) and the CPU model recorded with measurements (`machine`)."""
