"""The built-in recipes (``lenet``, ``mlp``, ``resnet``, ``ffnn``), their models and their datasets."""
