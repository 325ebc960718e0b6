"""OCR engines behind one interface (:class:`edge.ocr.base.BaseOCR`)."""
