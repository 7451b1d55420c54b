"""The experiment harness: one package per task (data, model, evaluate, run) and the shared
run scaffold. Importing it registers the config's run-folder resolver."""

from experiments.folders import register_resolvers

register_resolvers()
