"""The torch side: everything that holds a network (the only layer below the pipeline that imports torch):

* :mod:`.data` — MNIST, offline-capable, with the fixed validation split;
* :mod:`.networks` — the network classes the registry (:mod:`metaq_utils.coding.architectures`) names, rebuilding a network from a decoded file;
* :mod:`.checkpoints` — verified, atomic checkpoints (the only code that touches the model folders);
* :mod:`.training` — the training loop and its regularizer protocol (``after_backward``, ``after_step``);
* :mod:`.regularizer` — the METaQ entropy term as a gradient hook, on :mod:`metaq_utils.core.dual`;
* :mod:`.ptq` — post-training quantization of a network: the C_Q sweep and its selection.
"""
