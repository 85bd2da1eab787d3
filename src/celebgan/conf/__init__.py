# The Hydra configs of every command (a package, so that Hydra finds them in an installed wheel).
