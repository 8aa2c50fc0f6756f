"""Every kind of memory of the toolbox on the same tasks: the NTM's copy and associative recall,
MQAR and passkey retrieval; ``common`` holds what the four experiments share (one model per kind,
matched budgets, evaluation settings), ``plots`` their figures."""
