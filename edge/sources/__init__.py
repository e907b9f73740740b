"""Where media comes from: microphone, camera and replay sources behind one protocol, and the audio ring buffer."""
