"""Built-in finetuners: continue training a backbone with their own loss after the main training."""
