"""Helpers that are not model code and import nothing else of the package: matplotlib for the plots
(`figures`), the CPU model recorded with measurements (`machine`), the completeness of weights files
(`file_checks`) and write failures that name their file (`writing`)."""
