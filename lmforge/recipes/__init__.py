"""Recipes: the pipelines as library functions; ``lmforge/commands/`` holds thin argparse layers over them.

pretrain.py   PretrainConfig, pretrain()          finetune.py   FinetuneConfig, finetune(), evaluate / predict
quickstart.py quickstart() (the whole toy run)     loading.py    load_model_and_tokenizer()
completion.py complete() (generate / prompt)
"""
