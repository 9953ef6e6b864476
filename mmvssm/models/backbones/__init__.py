# One line per backbone module; importing it registers the class in mmengine's root MODELS.
