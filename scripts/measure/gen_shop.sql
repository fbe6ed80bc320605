SELECT setseed(0.42);
CREATE TABLE customers (
  id serial PRIMARY KEY, first_name text, last_name text, email text,
  phone text, street text, city text, postcode text, country text,
  created_at timestamptz, prefs jsonb);
CREATE TABLE orders (
  id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
  status text, placed_at timestamptz, total numeric(10,2), currency text,
  items jsonb, shipping_note text);
WITH fn AS (SELECT ARRAY['James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth','William','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Chris','Karen','Daniel','Lisa','Matthew','Nancy','Anthony','Betty','Mark','Sandra','Paul','Ashley','Steven','Emily','Andrew','Donna','Kenneth','Michelle','Joshua','Carol','Kevin','Amanda','Hans','Giulia','Pierre','Sofia','Lukas','Ana','Mateo','Yuki','Wei','Olga'] a),
     ln AS (SELECT ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin','Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores','Müller','Rossi','Dubois','Kowalski','Novak','Silva','Tanaka','Wang','Ivanova','Jensen'] a),
     st AS (SELECT ARRAY['Main St','Oak Avenue','Maple Road','Cedar Lane','Park Boulevard','Elm Street','Washington Ave','Lake Drive','Hillcrest Rd','Sunset Blvd','Church Street','Mill Lane','Station Road','High Street','River Road'] a),
     ct AS (SELECT ARRAY['Springfield','Riverside','Franklin','Greenville','Bristol','Clinton','Fairview','Salem','Madison','Georgetown','Lyon','Hamburg','Milano','Kraków','Porto','Osaka','Toronto','Austin','Denver','Leeds'] a),
     co AS (SELECT ARRAY['US','US','US','GB','DE','FR','IT','PL','PT','JP','CA','ES','NL','SE'] a)
INSERT INTO customers (first_name,last_name,email,phone,street,city,postcode,country,created_at,prefs)
SELECT f, l,
  lower(f)||'.'||lower(l)||(g%997)::text||'@'||(ARRAY['example.com','mail.test','corp.example.org','inbox.test'])[1+(g%4)],
  '+1-'||(200+floor(random()*800))::int||'-'||lpad((floor(random()*10000000))::int::text,7,'0'),
  (1+floor(random()*9999))::int||' '||(SELECT a FROM st)[1+floor(random()*15)::int],
  (SELECT a FROM ct)[1+floor(random()*20)::int],
  lpad((floor(random()*99999))::int::text,5,'0'),
  (SELECT a FROM co)[1+floor(random()*14)::int],
  timestamptz '2015-01-01' + random()*interval '3500 days',
  jsonb_build_object('newsletter', random()<0.4, 'lang', (ARRAY['en','de','fr','es','ja'])[1+floor(random()*5)::int],
     'tier', (ARRAY['free','silver','gold','platinum'])[1+floor(random()*4)::int],
     'tags', to_jsonb(ARRAY[(ARRAY['vip','b2b','returning','promo','wholesale','eco'])[1+floor(random()*6)::int]]),
     'last_login_ip', (floor(random()*223)+1)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int||'.'||floor(random()*255)::int)
FROM generate_series(1,600000) g,
  LATERAL (SELECT (SELECT a FROM fn)[1+floor(random()*50)::int + 0*g] f, (SELECT a FROM ln)[1+floor(random()*50)::int + 0*g] l) x;

INSERT INTO orders (customer_id,status,placed_at,total,currency,items,shipping_note)
SELECT 1+floor(random()*600000)::int,
  (ARRAY['placed','paid','shipped','delivered','delivered','delivered','returned','cancelled'])[1+floor(random()*8)::int],
  timestamptz '2018-01-01' + random()*interval '2500 days',
  round((5+random()*495)::numeric,2),
  (ARRAY['USD','EUR','GBP','JPY'])[1+floor(random()*4)::int],
  (SELECT jsonb_agg(jsonb_build_object('sku','SKU-'||lpad(floor(random()*99999)::int::text,5,'0'),
        'name',(ARRAY['USB-C cable 2m','Wireless mouse','Mechanical keyboard','27in monitor','Laptop stand','Noise-cancelling headphones','Webcam 1080p','Desk lamp','Office chair','Notebook A5 dotted','Coffee beans 1kg','Water bottle'])[1+floor(random()*12)::int],
        'qty',1+floor(random()*4)::int,'unit_price',round((2+random()*300)::numeric,2)))
     FROM generate_series(1,1+floor(random()*3)::int + 0*g)),
  CASE WHEN random()<0.3 THEN (ARRAY['Leave at the front door','Please ring the bell twice','Deliver to reception, 3rd floor','Gift wrap, no invoice in box','Call before delivery','Back entrance via the alley'])[1+floor(random()*6)::int] ELSE NULL END
FROM generate_series(1,1500000) g;
ANALYZE;
