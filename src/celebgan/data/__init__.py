"""Faces to train on: CelebA's on-disk formats, the synthetic faces, prepared arrays, batch loading
and the LightningDataModules. Imports gan (network sizes) and the ground floor."""
