"""How the closed forms count, which is how ``hirilib.measure.count_flops`` counts
(fvcore 0.1.5.post20221221 plus our handles) and how the papers' tools count:

* a convolution or linear layer: one multiply-accumulate (MAC) per weight use,
  biases free;
* LayerNorm: 5 per element (mean, variance, normalise, scale, shift);
* BatchNorm at inference: 2 per element (scale and shift, statistics folded);
  older fvcore releases counted 4, which CAS-ViT's published figures use;
* average pooling and means: 1 per input element;
* attention's matrix products: counted (Q K^T and A V);
* element-wise operations (activations, additions, softmax): free.
"""

LN_PER_ELEMENT = 5
BN_PER_ELEMENT = 2
