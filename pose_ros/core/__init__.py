"""Camera model, rigid transforms, object models, image/depth utilities."""
