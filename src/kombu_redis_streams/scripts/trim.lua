-- Remove the entries of a fanout stream that every remaining group has
-- acknowledged, after a group was destroyed.
--
-- KEYS: the fanout stream.
trim_acknowledged(KEYS[1])
return 1
