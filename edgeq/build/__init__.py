"""`edgeq build`: one recipe runs datagen -> convert -> check -> validate -> bench, with gates and caching."""
