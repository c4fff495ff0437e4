"""Reports: rich tables now; plots, HTML and the recommendation later."""
