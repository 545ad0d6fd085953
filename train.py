"""The design card's `python train.py -m encoder.dim=16,32,64,128,256`: the same as `simreduce train -m ...`."""

from simreduce.experiment.train import train

if __name__ == "__main__":
    train()
