"""How saliency maps are judged from model outputs alone: ADCC, insertion/deletion, pointing game."""
