"""The Kubeflow pipeline: compile, local run, submit and schedule."""
