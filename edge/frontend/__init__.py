"""Feature frontends shared by training and the device: log-mel audio features, frame preprocessing, WAV
reading, resampling."""
