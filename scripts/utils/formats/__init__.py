"""File formats and what reads, writes and compares them: tensors, arrays, media, DICOM
headers and de-identification, colour, plots, model files, logs, metrics tables."""
