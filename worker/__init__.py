"""maskfarm's GPU side: the CLIPSeg mask pipeline (pure torch), model loading, the RQ worker."""
