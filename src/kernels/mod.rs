//! Our CPU kernels (convolution, pooling, normalisation) as candle custom ops with their backward.
