"""`python -m simreduce train ...`, as launchers that start a module want it (`torchrun -m simreduce train ...`)."""

from simreduce.cli import main

main()
