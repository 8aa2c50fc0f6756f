"""The Gato-style generalist (``generalist``) and its transfer to held-out tasks (``finetune``);
``plots`` draws their figures."""
