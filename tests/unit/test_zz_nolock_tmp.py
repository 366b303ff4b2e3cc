from concurrent.futures import ThreadPoolExecutor
import gateway.store.db as db
def test_nolock(fresh_postgres_url):
    """x"""
    orig = db.text
    db.text = lambda s: orig("SELECT 1 WHERE :key IS NOT NULL")
    engines = [db.create_engine_for(fresh_postgres_url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as ex:
            print(list(ex.map(db.upgrade_to_head, engines)))
    finally:
        db.text = orig
        for e in engines: e.dispose()
