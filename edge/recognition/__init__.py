"""Finding and reading plates in an image: detectors, OCR, plate formats, model files."""
