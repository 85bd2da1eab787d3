"""What keeps a training run alive: the checkpoint contract and what a stored config may hold,
resume, the run folder's lock, callbacks, guards and the HParams row. Imports metrics, data, gan
and the ground floor; the commands import it."""
