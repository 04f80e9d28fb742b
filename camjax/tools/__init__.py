"""Commands beside training: CAMs on your images, scoring saved maps, ablations over seeds."""
