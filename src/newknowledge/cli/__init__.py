"""Command-line tools above the study: ``newknowledge-slick``, SliCK on any QA data set."""
