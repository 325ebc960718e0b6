"""The watchlist: wanted plates, CSV files, signed pushed lists, the live set reads meet."""
