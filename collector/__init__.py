"""Records real upstream exchanges as .flow fixtures: scenarios, the recorder addon, the collector CLI."""
