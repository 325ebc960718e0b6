"""OCR engines behind one interface (:class:`edge.recognition.ocr.base.BaseOCR`)."""
