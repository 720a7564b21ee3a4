"""Networks: plain nn.Modules whose first argument is ``num_classes``. Add yours here."""
