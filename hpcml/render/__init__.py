"""Pure text out: Apptainer definition files, job scripts (the wrapper is package data),
GPU flags and `compile`'s files. Nothing here runs a program or reads a global."""
