"""Post-processing of model scores into events: the command recognizer, the energy gate, the scene smoother."""
