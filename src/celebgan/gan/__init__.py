"""The GAN itself: networks, objectives, penalties, DiffAugment, the LightningModule, and images
from a generator. Imports only the ground floor (errors, io)."""
