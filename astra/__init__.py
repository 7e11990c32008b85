"""astra: speech recognition with text injection.

Speech and text encoders feed a shared Conformer; an ASTRA consistency loss weighted by
RNN-T lattice occupancies ties the two modalities together, and an Aligner-Encoder
decoder reads one token per frame. See README.md for the tour.
"""

__version__ = "0.1.0"
