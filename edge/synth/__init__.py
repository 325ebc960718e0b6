"""Generated test material: plate scenes, Hong Kong plates, traffic clips with truth."""
