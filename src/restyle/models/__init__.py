"""Networks: the feed-forward style transformer (and VGG-19 once the engine refactor lands)."""
