"""Fine-tuning's first epochs: train the new head alone while the pretrained body stays as it was."""

from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn

from project.errors import UsageError
from project.optim.configure import body_parameters


class FreezeBody(Callback):
    """Freezes the network's body (everything outside its ``head``) for the first ``epochs`` epochs.

    A new head starts at random, and its first large gradients would flow into the pretrained body
    and disturb it; frozen, the body gets no gradient and no step until the head has settled. Its
    BatchNorm layers are kept in eval mode meanwhile, so their running statistics stay the pretrained ones.

    Not Lightning's ``BackboneFinetuning``: that one leaves the body out of the optimizer and adds it
    as a new param group when it unfreezes, a group that a scheduler built at the start never saw
    (``WarmupCosine`` keeps one base LR per group from its construction), so the body would train at a
    constant LR outside the schedule. Here the body's groups are in the optimizer from the first step
    and follow the schedule (at ``model.body_lr_scale``); freezing only withholds their gradients, and
    optimizers skip a parameter without a gradient, weight decay included.

    Under DDP, a frozen body needs ``--trainer.strategy ddp_find_unused_parameters_true``.

    Args:
        epochs: Epochs with the body frozen; 0 freezes nothing.
    """

    def __init__(self, epochs: int = 1) -> None:
        if epochs < 0:
            raise UsageError(f"FreezeBody epochs must be >= 0, got {epochs}")
        self.epochs = epochs

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Only what trains at all: a layer that is never trained (ConvNet's whitening) stays frozen after.
        self.trainable = [p for p in body_parameters(pl_module) if p.requires_grad]
        body = set(self.trainable) | body_parameters(pl_module)
        norms = [m for m in pl_module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.body_norms = [norm for norm in norms if set(norm.parameters()) & body]

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        frozen = trainer.current_epoch < self.epochs
        for parameter in self.trainable:
            parameter.requires_grad_(not frozen)
        if frozen:  # Lightning sets train mode before each epoch; validation restores it afterwards
            for norm in self.body_norms:
                norm.eval()
