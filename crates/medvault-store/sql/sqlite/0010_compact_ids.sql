-- Resource ids of the form the server draws (a UUID in lowercase hex, 36 characters) are
-- kept as their 16 bytes instead of their text: the UNIQUE (rtype, id, version) index takes
-- random ids all over, and a third smaller entry means a third fewer of its pages in each
-- commit (85 -> 57 of a 280-resource Bundle's 188 written pages). Any other id stays
-- text. A BLOB never equals a TEXT value in SQLite, so the two forms cannot collide; the
-- store converts at its boundary (`IdColumn` in sqlite.rs) and callers still see text.
UPDATE resource_version
    SET id = unhex(replace(id, '-', ''))
    WHERE typeof(id) = 'text' AND length(id) = 36
      AND id GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]';
