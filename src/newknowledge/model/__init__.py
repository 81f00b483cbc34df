"""The model: any causal LM loaded and scored (lm, engine), pretraining of the controlled world's model
from scratch, and the fine-tuning step."""
