"""The bAbI experiments: MemN2N on 1k (``memn2n``), a Universal Transformer pondered by PonderNet
(``pondernet``) and MEMO (``memo``) on 10k; ``common`` holds the data, batches, per-task evaluation
and plots they share."""
