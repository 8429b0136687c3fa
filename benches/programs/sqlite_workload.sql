-- Real-program workload: the sqlite3 shell on an in-memory database. SQLite takes its memory
-- from malloc (page cache, B-tree cells, sorter, statement objects), so the allocator under test
-- serves it all. Prints one result row that depends only on this script.
PRAGMA cache_size = -65536;
CREATE TABLE item(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, payload BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
INSERT INTO item SELECT i, (i * 7919) % 1009, printf('name-%08x', (i * 2654435761) % 4294967296),
                        zeroblob(16 + (i % 200)) FROM n;
CREATE INDEX item_grp ON item(grp, name);
CREATE TABLE summary AS
  SELECT grp, count(*) AS c, sum(length(payload)) AS bytes, max(name) AS top FROM item GROUP BY grp;
UPDATE item SET name = name || '-x' WHERE id % 3 = 0;
DELETE FROM item WHERE id % 5 = 0;
CREATE TABLE sorted AS SELECT name, grp FROM item ORDER BY name DESC;
SELECT 'workload=sqlite ops=' || (SELECT count(*) FROM item) || ' checksum=' ||
       printf('%x', (SELECT sum(c * 31 + bytes + length(top)) FROM summary) +
                    (SELECT sum(length(name)) FROM sorted));
