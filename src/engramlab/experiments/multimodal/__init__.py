"""Vision and language: Frozen and Flamingo (a frozen LM that learns to see, and binds new words
to images in its context)."""
