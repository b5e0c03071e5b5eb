"""The experiments' data: task generators and evaluation splits (batch types: :mod:`aenp.batch`)."""
