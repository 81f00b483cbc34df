"""The book: the pipeline a chapter starts from, each chapter's results and checks, the findings page,
figures and what a page shows besides them."""
