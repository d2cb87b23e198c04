"""The method core: behaviours, models and chat templates, persona data, the judge, adapters and their training, dW,
steering, and the :class:`~weight_steering.core.methods.SteeringMethod` protocol with its weight, prompt and
activation implementations."""
