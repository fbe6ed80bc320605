SELECT setseed(0.1234);
-- Same volume as night2_changes.sql (~1% of rows), but with time locality:
-- ~90% of changed rows are among the newest 5% of each table (by id), ~10% scattered.
UPDATE pgbench_accounts SET abalance = abalance + (random()*10000)::int - 5000
  WHERE (aid > 1900000 AND random() < 0.18) OR random() < 0.001;
UPDATE pgbench_tellers  SET tbalance = tbalance + 17 WHERE random() < 0.10;
UPDATE pgbench_branches SET bbalance = bbalance + 99;
INSERT INTO pgbench_history (tid,bid,aid,delta,mtime) SELECT 1+(random()*199)::int, 1+(random()*19)::int, 1+(random()*1999999)::int, (random()*10000)::int-5000, now() FROM generate_series(1,5000);
UPDATE customers SET prefs = jsonb_set(prefs, '{last_login_ip}', to_jsonb((floor(random()*223)+1)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int))
  WHERE (id > 570000 AND random() < 0.144) OR random() < 0.0008;
UPDATE customers SET email = replace(email, '@', '+shop@') WHERE (id > 570000 AND random() < 0.036) OR random() < 0.0002;
UPDATE orders SET status = CASE status WHEN 'placed' THEN 'paid' WHEN 'paid' THEN 'shipped' WHEN 'shipped' THEN 'delivered' ELSE 'returned' END
  WHERE (id > 1425000 AND random() < 0.18) OR random() < 0.001;
INSERT INTO customers (first_name,last_name,email,phone,street,city,postcode,country,created_at,prefs)
  SELECT 'New','Customer'||g, 'new.customer'||g||'@example.com', '+1-555-'||lpad(g::text,7,'0'), g||' Station Road','Leeds','12345','GB', now(), '{"lang":"en","tier":"free","tags":[],"newsletter":true}' FROM generate_series(1,1000) g;
INSERT INTO orders (customer_id,status,placed_at,total,currency,items,shipping_note)
  SELECT 1+floor(random()*600000)::int, 'placed', now(), round((5+random()*495)::numeric,2), 'EUR',
    jsonb_build_array(jsonb_build_object('sku','SKU-'||lpad(floor(random()*99999)::int::text,5,'0'),'name','Desk lamp','qty',1,'unit_price',39.90)), NULL
  FROM generate_series(1,7500) g;
DELETE FROM orders WHERE (id > 1425000 AND random() < 0.018) OR random() < 0.0001;
DELETE FROM customers c WHERE id > 570000 AND random() < 0.04 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id);
