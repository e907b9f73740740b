"""Running a deployed model: the LiteRT interpreter, the three-signature model, quantization, the flatbuffer reader."""
