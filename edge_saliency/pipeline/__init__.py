"""The way of a frame: sources -> capture (latest frame) -> model -> render (views, LOVI, HUD) ->
sinks (window, recorder, JSON log, contact sheet), and the `run` loop that drives them."""
